"""The bare baseline: FastAPI + SQLAlchemy on the same table, with no auth, no grants,
no audit. What a team would write by hand; ServiceBay is measured against it."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(os.environ["BASELINE_DATABASE_URL"], pool_size=10)
app = FastAPI()


@app.get("/customer/{email}")
async def get_customer(email: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT id, email, name, plan, created_at FROM customer WHERE email = :email"),
                {"email": email},
            )
        ).first()
    if row is None:
        raise HTTPException(404)
    return dict(row._mapping)


@app.get("/customer")
async def list_customers(plan: str, limit: int = 20) -> dict[str, Any]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT id, email, name, plan, created_at FROM customer WHERE plan = :plan "
                "ORDER BY id LIMIT :limit"
            ),
            {"plan": plan, "limit": limit},
        )
        return {"data": [dict(row._mapping) for row in rows]}
