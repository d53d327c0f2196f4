"""The dramatiq adapter for jobadapter."""
