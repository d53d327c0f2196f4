"""The celery adapter for jobadapter."""
