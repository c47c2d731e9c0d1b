"""A Flask JSON endpoint: routing, a request context and JSON encoding per request."""
from flask import Flask, jsonify

from bench.apps import worker_pid

app = Flask(__name__)


@app.route("/")
def hello_json():
    response = jsonify(message="Hello, World!")
    response.headers["X-Worker-Pid"] = worker_pid()
    return response
