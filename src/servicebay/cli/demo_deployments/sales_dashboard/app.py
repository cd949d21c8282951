"""The demo's dashboard: revenue by plan and by month, read through the sales service."""

from collections import defaultdict
from html import escape
from typing import Any

from flask import Flask, request

from servicebay import Client

app = Flask(__name__)
api = Client()  # the owner's INTERNAL_API_KEY, given to the server by the platform


def rows(path: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = api.get(path, params=params)
        found += page["data"]
        cursor = page["next"]
        if not cursor:
            return found


def table(title: str, totals: dict[str, float]) -> str:
    body = "".join(
        f"<tr><td>{escape(key)}</td><td>{value:,.2f}</td></tr>"
        for key, value in sorted(totals.items())
    )
    return f"<h2>{escape(title)}</h2><table><tr><th></th><th>revenue</th></tr>{body}</table>"


@app.get("/healthz")
def health() -> str:
    return "ok"


@app.get("/")
def dashboard() -> str:
    plans = {customer["id"]: customer["plan"] for customer in rows("sales/customer")}
    by_plan: dict[str, float] = defaultdict(float)
    by_month: dict[str, float] = defaultdict(float)
    for order in rows("sales/orders"):
        by_plan[plans.get(order["customer_id"], "unknown")] += float(order["amount"])
        by_month[str(order["ordered_on"])[:7]] += float(order["amount"])
    viewer = escape(request.headers.get("X-Bay-User", "someone"))
    return (
        "<!doctype html><title>Sales dashboard</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em 1em}</style>"
        f"<h1>Sales dashboard</h1><p>Hello, {viewer}.</p>"
        + table("Revenue by plan", by_plan)
        + table("Revenue by month", by_month)
    )
