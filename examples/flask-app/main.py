"""A Flask app as an edge function: `kind = "wsgi"`."""

import time

try:
    from flask import Blueprint, Flask, Response, jsonify, request
except ModuleNotFoundError as exc:
    # Served from a directory without .deps/: say how to get Flask instead of a bare import error.
    raise ModuleNotFoundError(
        f"{exc}: install requirements.txt into .deps/ (`edge deploy` does; locally: "
        "pip install --target .deps -r requirements.txt)",
        name=exc.name,
    ) from None

routes = Blueprint("flask-app", __name__, url_prefix="/flask-app")


@routes.get("/", strict_slashes=False)  # /flask-app answers too, without a redirect
def home():
    return f"hello, {request.args.get('name', 'world')}"


@routes.get("/users/<int:user_id>")
def user(user_id: int):
    return jsonify(id=user_id, name=f"user {user_id}")


@routes.post("/form")
def form():
    # A form POST (application/x-www-form-urlencoded or multipart) read by Werkzeug.
    return jsonify(fields=request.form.to_dict(flat=False))


@routes.get("/stream")
def stream():
    """A generator body: no Content-Length, so each piece reaches the client as it is made."""
    count = int(request.args.get("count", "3"))

    def lines():
        for number in range(count):
            yield f"line {number}\n"
            time.sleep(0.2)

    return Response(lines(), mimetype="text/plain")


app = Flask(__name__)
app.register_blueprint(routes)
