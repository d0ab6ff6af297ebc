"""TraceHub: a Kafka-shaped logging platform."""

__version__ = "0.1.0"
