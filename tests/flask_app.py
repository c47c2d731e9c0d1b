"""A small Flask application for the end-to-end tests (``flask_app:app``).

Static files are served from ``tests/static/`` (``/static/sample.txt``):
Flask's ``send_file`` hands the open file to the server's
``wsgi.file_wrapper``.
"""
import hashlib
import os

from flask import Flask, Response, abort, jsonify, request, session, stream_with_context

app = Flask(__name__)
# a fixed key: two servers started from this module sign session cookies alike
app.secret_key = "turboworkers-tests-only"


@app.get("/")
def index():
    return "Hello from Flask\n"


@app.post("/json")
def echo_json():
    data = request.get_json(force=True)
    return jsonify(received=data, method=request.method, path=request.path,
                   args=request.args.to_dict(), scheme=request.scheme)


@app.route("/upload", methods=["POST", "PUT"])
def upload():
    """Form fields and files of a multipart or urlencoded body, or the raw body's digest."""
    files = {name: {"filename": f.filename,
                    "sha256": hashlib.sha256(f.read()).hexdigest()}
             for name, f in request.files.items()}
    if not files and not request.form:
        raw = request.get_data()
        return jsonify(length=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    return jsonify(form=request.form.to_dict(), files=files)


@app.get("/stream")
def stream():
    n = request.args.get("n", 5, type=int)

    def gen():
        for i in range(n):
            yield "line %d\n" % i
    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.get("/pid")
def pid():
    return Response(str(os.getpid()), headers={"X-Worker-Pid": str(os.getpid())})


@app.get("/boom")
def boom():
    raise RuntimeError("Flask view raised (expected by the test)")


@app.get("/abort/<int:code>")
def abort_with(code):
    abort(code)


@app.get("/cookies")
def cookies():
    resp = jsonify(cookies=request.cookies.to_dict())
    resp.set_cookie("a", "1")
    resp.set_cookie("b", "2", httponly=True)
    return resp


@app.get("/redirect")
def redirect_():
    from flask import redirect, url_for
    return redirect(url_for("index"))


@app.get("/session/set")
def session_set():
    session["value"] = request.args.get("value", "")
    return "stored\n"


@app.get("/session/get")
def session_get():
    return jsonify(value=session.get("value"))


@app.post("/form")
def form():
    """A urlencoded form, as a browser posts it."""
    return jsonify(form=request.form.to_dict(flat=False))
