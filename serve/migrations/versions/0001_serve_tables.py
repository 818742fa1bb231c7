"""The API's tables: prediction batches, feedback, retrain triggers.

Revision ID: serve_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "serve_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serve_prediction_batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("model_alias", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
    )
    op.create_index("ix_serve_prediction_batches_created_at", "serve_prediction_batches", ["created_at"])
    op.create_table(
        "serve_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(64), nullable=False, unique=True),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("predicted_label", sa.String(100), nullable=False),
        sa.Column("true_label", sa.String(100), nullable=False),
        sa.Column("correct", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_serve_feedback_model", "serve_feedback", ["model_name", "model_version", "id"])
    op.create_table(
        "serve_retrain_triggers",
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("armed", sa.Boolean, nullable=False),
        sa.Column("crossings", sa.Integer, nullable=False),
        sa.Column("last_accuracy", sa.Float, nullable=True),
        sa.Column("last_job_id", sa.String(64), nullable=True),
        sa.Column("last_triggered_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("serve_retrain_triggers")
    op.drop_index("ix_serve_feedback_model", "serve_feedback")
    op.drop_table("serve_feedback")
    op.drop_index("ix_serve_prediction_batches_created_at", "serve_prediction_batches")
    op.drop_table("serve_prediction_batches")
