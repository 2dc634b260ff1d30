"""hits per content, viewer and day, for the dashboard's usage charts

Revision ID: 0016_usage_days
Revises: 0015_usage_imports
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = '0016_usage_days'
down_revision = '0015_usage_imports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'usage_days',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('content_guid', sa.String(length=36), nullable=False),
        sa.Column('user_guid', sa.String(length=36), nullable=False),
        sa.Column('requests', sa.BigInteger(), nullable=False),
        sa.Column('last', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('day', 'content_guid', 'user_guid'),
    )
    # The hits recorded before, counted once here; the importer counts the rest.
    day = "date(time)" if op.get_bind().dialect.name == "sqlite" else "(time AT TIME ZONE 'UTC')::date"
    op.execute(
        "INSERT INTO usage_days (day, content_guid, user_guid, requests, last) "
        f"SELECT {day}, content_guid, coalesce(user_guid, ''), count(*), max(time) FROM content_hits "
        f"GROUP BY {day}, content_guid, coalesce(user_guid, '')"
    )


def downgrade() -> None:
    op.drop_table('usage_days')
