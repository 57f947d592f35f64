"""Summary statistics of the numbers in the query (`?x=1,2,3`) or a JSON list body, with numpy."""

try:
    import numpy as np
except ModuleNotFoundError as exc:
    # Served from a directory without .deps/: say how to get numpy instead of a bare import error.
    raise ModuleNotFoundError(
        f"{exc}: install requirements.txt into .deps/ (`edge deploy` does; locally: "
        "pip install --target .deps -r requirements.txt)",
        name=exc.name,
    ) from None

from edgefn import Request


def handler(request: Request):
    if request.body:
        values = request.json()
    else:
        raw = request.query.get("x", ["1,2,3,4"])[0]
        values = [float(part) for part in raw.split(",") if part]
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"error": "no numbers"}, 400
    return {
        "n": int(data.size),
        "mean": float(data.mean()),
        "std": float(data.std()),
        "median": float(np.median(data)),
        "p90": float(np.percentile(data, 90)),
        "numpy": np.__version__,
    }
