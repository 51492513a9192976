"""Lambda entry points (the template's Handler values). Thin: wire, call, translate."""
