"""The rq adapter for jobadapter."""
