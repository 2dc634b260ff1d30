"""partial indexes of the visits among the hits, for the visits API's pages

Revision ID: 0017_visit_indexes
Revises: 0016_usage_days
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = '0017_visit_indexes'
down_revision = '0016_usage_days'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, columns in (('ix_content_hits_visits', ['id']), ('ix_content_hits_content_visits', ['content_guid', 'id'])):
        op.create_index(name, 'content_hits', columns, sqlite_where=sa.text("visit = 1"),
                        postgresql_where=sa.text("visit = true"))


def downgrade() -> None:
    op.drop_index('ix_content_hits_content_visits', table_name='content_hits')
    op.drop_index('ix_content_hits_visits', table_name='content_hits')
