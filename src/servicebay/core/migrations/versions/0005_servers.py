"""Hosted servers: each server deployment's process state, and its log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as deployments:
        deployments.add_column(sa.Column("server_state", sa.String(16), nullable=True))
        deployments.add_column(sa.Column("server_reason", sa.String(2000), nullable=True))
        deployments.add_column(sa.Column("server_version", sa.Integer(), nullable=True))
        deployments.add_column(sa.Column("server_address", sa.String(128), nullable=True))
        deployments.add_column(sa.Column("server_pid", sa.Integer(), nullable=True))
        deployments.add_column(
            sa.Column("server_restarts", sa.Integer(), nullable=False, server_default="0")
        )
        deployments.add_column(sa.Column("server_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "server_log_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "deployment_id",
            sa.String(32),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_server_log_chunks_deployment_id", "server_log_chunks", ["deployment_id"])


def downgrade() -> None:
    op.drop_index("ix_server_log_chunks_deployment_id", "server_log_chunks")
    op.drop_table("server_log_chunks")
    with op.batch_alter_table("deployments") as deployments:
        for column in (
            "server_since",
            "server_restarts",
            "server_pid",
            "server_address",
            "server_version",
            "server_reason",
            "server_state",
        ):
            deployments.drop_column(column)
