"""Per-duel public log: duel_events, duels.last_event_id (docs/events.md, "The duel log")

duel_events holds each duel's public log (spectators read it); ids are per duel, gapless,
allocated by bumping duels.last_event_id under the duel row's lock, like the personal log's
users.last_event_id. ix_duels_status_id serves GET /api/duels?status= (newest first).

Depends on 0003 here: 0004 (challenges) is written on another branch at the same time; the
two are chained on merge (this one then revises 0004).

Revision ID: 0005_duel_log
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005_duel_log'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('duels', sa.Column('last_event_id', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    op.create_table(
        'duel_events',
        sa.Column('duel_id', sa.BigInteger(), nullable=False),
        sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('type', sa.Text(), nullable=False),
        sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['duel_id'], ['duels.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('duel_id', 'id'),
    )
    op.create_index('ix_duel_events_created_at', 'duel_events', ['created_at'], unique=False)
    op.create_index('ix_duels_status_id', 'duels', ['status', sa.text('id DESC')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_duels_status_id', table_name='duels')
    op.drop_index('ix_duel_events_created_at', table_name='duel_events')
    op.drop_table('duel_events')
    op.drop_column('duels', 'last_event_id')
