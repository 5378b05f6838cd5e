"""`make chaos`: fault scenarios with Jepsen-style accounting over runs."""
