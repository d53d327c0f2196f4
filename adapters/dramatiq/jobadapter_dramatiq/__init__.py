"""The Dramatiq adapter for jobadapter: ``dramatiq+amqp://…`` and ``dramatiq+redis://…`` URLs."""

from jobadapter_dramatiq.adapter import DramatiqAdapter, RabbitmqAdapter, RedisAdapter

__all__ = ["DramatiqAdapter", "RabbitmqAdapter", "RedisAdapter"]
