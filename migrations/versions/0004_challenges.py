"""Challenges, rematch offers, blocks, the challenges switch and unrated duels

challenges: one row per challenge or rematch offer (duely/challenges.py). Its id is random text,
not a sequence number: an open challenge is accepted by whoever has its link, so the id must not
be guessable. `to_user_id` NULL = an open challenge. A player has at most one pending rematch
offer per duel (ux_challenges_one_rematch_offer).
blocks: (blocker, blocked) pairs; a block stops challenges both ways.
users.accept_challenges: false = nobody may challenge this player by name.
duels.rated: false = the duel changes no rating (existing duels were all rated).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('users', sa.Column('accept_challenges', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.add_column('duels', sa.Column('rated', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.create_table('challenges',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), server_default=sa.text("'challenge'"), nullable=False),
    sa.Column('challenger_id', sa.BigInteger(), nullable=False),
    sa.Column('to_user_id', sa.BigInteger(), nullable=True),
    sa.Column('rated', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('duration_secs', sa.Integer(), nullable=False),
    sa.Column('rematch_of', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('decline_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('closed_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('accepted_by', sa.BigInteger(), nullable=True),
    sa.Column('duel_id', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("kind IN ('challenge', 'rematch')", name='ck_challenges_kind'),
    sa.CheckConstraint("status IN ('pending', 'accepted', 'declined', 'canceled', 'expired')", name='ck_challenges_status'),
    sa.CheckConstraint("kind = 'challenge' OR (rematch_of IS NOT NULL AND to_user_id IS NOT NULL)", name='ck_challenges_rematch'),
    sa.ForeignKeyConstraint(['challenger_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['to_user_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['accepted_by'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rematch_of'], ['duels.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['duel_id'], ['duels.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_challenges_challenger_created', 'challenges', ['challenger_id', 'created_at'], unique=False)
    op.create_index('ix_challenges_to_pending', 'challenges', ['to_user_id'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_challenges_pending_expiry', 'challenges', ['expires_at'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ux_challenges_one_rematch_offer', 'challenges', ['rematch_of', 'challenger_id'], unique=True,
                    postgresql_where=sa.text("status = 'pending' AND kind = 'rematch'"))
    op.create_table('blocks',
    sa.Column('blocker_id', sa.BigInteger(), nullable=False),
    sa.Column('blocked_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('blocker_id <> blocked_id', name='ck_blocks_not_self'),
    sa.ForeignKeyConstraint(['blocker_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['blocked_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('blocker_id', 'blocked_id')
    )
    op.create_index('ix_blocks_blocked', 'blocks', ['blocked_id', 'blocker_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_blocks_blocked', table_name='blocks')
    op.drop_table('blocks')
    op.drop_index('ux_challenges_one_rematch_offer', table_name='challenges')
    op.drop_index('ix_challenges_pending_expiry', table_name='challenges')
    op.drop_index('ix_challenges_to_pending', table_name='challenges')
    op.drop_index('ix_challenges_challenger_created', table_name='challenges')
    op.drop_table('challenges')
    op.drop_column('duels', 'rated')
    op.drop_column('users', 'accept_challenges')
