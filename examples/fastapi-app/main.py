"""A FastAPI app as an edge function: `kind = "asgi"`, `isolation = "process"`."""

try:
    from fastapi import APIRouter, FastAPI, HTTPException
except ModuleNotFoundError as exc:
    # Served from a directory without .deps/: say how to get FastAPI instead of a bare import error.
    raise ModuleNotFoundError(
        f"{exc}: install requirements.txt into .deps/ (`edge deploy` does; locally: "
        "pip install --target .deps -r requirements.txt)",
        name=exc.name,
    ) from None
from pydantic import BaseModel, Field


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


items: dict[int, Item] = {}
router = APIRouter(prefix="/fastapi-app")


@router.get("")
def home() -> dict:
    return {"message": "hello from FastAPI", "items": len(items)}


@router.post("/items", status_code=201)
def create_item(item: Item) -> dict:
    item_id = len(items) + 1
    items[item_id] = item
    return {"id": item_id, **item.model_dump()}


@router.get("/items/{item_id}")
def read_item(item_id: int) -> Item:
    if item_id not in items:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    return items[item_id]


app = FastAPI(title="fastapi-app")
app.include_router(router)
