"""The AWS edge: configuration, SSM, SQS, the DLQ, observability. Thin: translate, don't decide."""
