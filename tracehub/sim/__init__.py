"""Simulated producers: services that log through the ingest protocol.

``domain`` writes the logs, ``buffer`` keeps them in Redis until they are durable,
``transport`` posts batches with retries, ``producer`` follows the ACKs, ``run``
drives several services and reconciles them, and ``cli`` is ``tracehub sim``.
"""
