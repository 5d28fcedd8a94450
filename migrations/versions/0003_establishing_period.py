"""Establishing period: which players are rated from their history; outcomes fixed at the start

users.establishing: true while a player who started as a newcomer has played fewer than
duely.rating.ESTABLISHING_DUELS (30) duels; their rating is then recomputed from all their
duels at each duel's start (duely/rating.py). It holds only when every finished duel of the
player was rated by Glicko-2 (a player carried over from Elo has no newcomer start to recompute
from), so existing players get: fewer than 30 duels and none rated before migration 0002.
duel_players.outcomes: the player's Glicko-2 state after a win, a draw and a loss, computed
when the duel starts and applied at the finish (NULL for duels started before this migration).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('users', sa.Column('establishing', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.add_column('duel_players', sa.Column('outcomes', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    # 30 = duely.rating.ESTABLISHING_DUELS at the time of this migration
    op.execute("""
        UPDATE users u SET establishing = false
        WHERE u.played >= 30
           OR EXISTS (SELECT 1 FROM duel_players p JOIN duels d ON d.id = p.duel_id
                      WHERE p.user_id = u.id AND d.status = 'finished' AND p.deviation_after IS NULL)
    """)


def downgrade() -> None:
    op.drop_column('duel_players', 'outcomes')
    op.drop_column('users', 'establishing')
