"""The relay service: config, CLI, submission, queue, delivery. Wires `quota` and `reputation`."""

__all__: list[str] = []
