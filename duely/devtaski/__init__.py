"""The development Taski: our own implementation of the Taski contract (docs/devtaski.md).

It serves the bundled problem set over HTTP, judges submissions for real in sandboxed worker
processes and publishes judging progress to Kafka, exactly as docs/taski.md describes.
`python -m duely.devtaski` runs it as its own process (make run starts it when TASKI_URL is unset).
"""
