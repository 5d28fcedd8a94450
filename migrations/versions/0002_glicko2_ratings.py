"""Glicko-2 ratings: deviation, volatility and last-rated time per user; RD and stakes per duel player

Existing players keep their rating; their RD is derived from how many duels they played
(duely.rating.carried_over_deviation, copied here as SQL so that this migration never changes
with the code): 0 duels -> 350, 10 -> ~106, 50 -> ~49, floor 45. Their last rated time is the
end of their last finished duel. The rating history is duel_players itself (rating before and
after per finished duel, plus the RD after, NULL for duels rated before this migration).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# duely.rating at the time of this migration: SCALE = 400 / ln 10, START_DEVIATION 350,
# MIN_DEVIATION 45; information per past duel = g(45 / SCALE)^2 / 4.
CARRIED_OVER_DEVIATION_SQL = """
    greatest(45.0, (400.0 / ln(10.0)) / sqrt(
        1.0 / (350.0 / (400.0 / ln(10.0))) ^ 2
        + played * 0.25 / (1.0 + 3.0 * (45.0 / (400.0 / ln(10.0))) ^ 2 / pi() ^ 2)))
"""


def upgrade() -> None:
    op.add_column('users', sa.Column('rating_exact', sa.Double(), server_default=sa.text('1500'), nullable=False))
    op.add_column('users', sa.Column('rating_deviation', sa.Double(), server_default=sa.text('350'), nullable=False))
    op.add_column('users', sa.Column('rating_volatility', sa.Double(), server_default=sa.text('0.09'), nullable=False))
    op.add_column('users', sa.Column('rated_at', sa.TIMESTAMP(timezone=True), nullable=True))
    op.add_column('duel_players', sa.Column('deviation_after', sa.Double(), nullable=True))
    op.add_column('duel_players', sa.Column('stakes', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.execute(f"""
        UPDATE users u SET rating_exact = u.rating,
                           rating_deviation = {CARRIED_OVER_DEVIATION_SQL},
                           rated_at = (SELECT max(d.finished_at) FROM duel_players p JOIN duels d ON d.id = p.duel_id
                                       WHERE p.user_id = u.id AND d.status = 'finished')
    """)


def downgrade() -> None:
    op.drop_column('duel_players', 'stakes')
    op.drop_column('duel_players', 'deviation_after')
    op.drop_column('users', 'rated_at')
    op.drop_column('users', 'rating_volatility')
    op.drop_column('users', 'rating_deviation')
    op.drop_column('users', 'rating_exact')
