"""The loop: the pipeline that runs crowd and model together (pull, aggregate, retire, retrain,
score, next round), the dashboard that shows it, and the demo that starts it.

It sits above both apps: ``ml`` <- ``annotate`` <- ``training`` <- ``loop``.
"""
