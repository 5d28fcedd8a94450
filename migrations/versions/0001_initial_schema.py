"""initial schema

Revision ID: 0001
Revises: 
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_throttle',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('failures', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('window_started_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('locked_until', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('nickname', sa.Text(), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('rating', sa.Integer(), server_default=sa.text('1500'), nullable=False),
    sa.Column('played', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('won', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('lost', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('drawn', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_event_id', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_users_rating', 'users', [sa.literal_column('rating DESC'), 'id'], unique=False)
    op.create_index('ux_users_nickname_lower', 'users', [sa.literal_column('lower(nickname)')], unique=True)
    op.create_table('auth_tokens',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('token_hash', sa.Text(), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_auth_tokens_user_id'), 'auth_tokens', ['user_id'], unique=False)
    op.create_table('duels',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'active'"), nullable=False),
    sa.Column('task_id', sa.Text(), nullable=False),
    sa.Column('task', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('started_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deadline', sa.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('finished_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('winner_id', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['winner_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_duels_active_deadline', 'duels', ['deadline'], unique=False, postgresql_where=sa.text("status = 'active'"))
    op.create_table('events',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'id')
    )
    op.create_index('ix_events_created_at', 'events', ['created_at'], unique=False)
    op.create_table('presence',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('queue_entries',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('joined_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('duel_players',
    sa.Column('duel_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('rating_before', sa.Integer(), nullable=False),
    sa.Column('rating_after', sa.Integer(), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.ForeignKeyConstraint(['duel_id'], ['duels.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('duel_id', 'user_id')
    )
    op.create_index('ix_duel_players_user_duel', 'duel_players', ['user_id', sa.literal_column('duel_id DESC')], unique=False)
    op.create_index('ux_duel_players_one_active', 'duel_players', ['user_id'], unique=True, postgresql_where=sa.text('is_active'))
    op.create_table('submissions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('duel_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('language', sa.Text(), nullable=False),
    sa.Column('solution', sa.Text(), nullable=False),
    sa.Column('client_temp_id', sa.Text(), nullable=True),
    sa.Column('submitted_at', sa.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('progress', sa.Text(), nullable=True),
    sa.Column('verdict', sa.Text(), nullable=True),
    sa.Column('last_seq', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('send_attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('sent_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('last_message_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('judged_at', sa.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['duel_id'], ['duels.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_submissions_duel_submitted', 'submissions', ['duel_id', 'submitted_at'], unique=False)
    op.create_index('ix_submissions_unjudged', 'submissions', ['status', 'submitted_at'], unique=False, postgresql_where=sa.text("status <> 'judged'"))
    op.create_index('ix_submissions_user_submitted', 'submissions', ['user_id', 'submitted_at'], unique=False)
    op.create_index('ux_submissions_client_temp_id', 'submissions', ['duel_id', 'user_id', 'client_temp_id'], unique=True, postgresql_where=sa.text('client_temp_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ux_submissions_client_temp_id', table_name='submissions', postgresql_where=sa.text('client_temp_id IS NOT NULL'))
    op.drop_index('ix_submissions_user_submitted', table_name='submissions')
    op.drop_index('ix_submissions_unjudged', table_name='submissions', postgresql_where=sa.text("status <> 'judged'"))
    op.drop_index('ix_submissions_duel_submitted', table_name='submissions')
    op.drop_table('submissions')
    op.drop_index('ux_duel_players_one_active', table_name='duel_players', postgresql_where=sa.text('is_active'))
    op.drop_index('ix_duel_players_user_duel', table_name='duel_players')
    op.drop_table('duel_players')
    op.drop_table('queue_entries')
    op.drop_table('presence')
    op.drop_index('ix_events_created_at', table_name='events')
    op.drop_table('events')
    op.drop_index('ix_duels_active_deadline', table_name='duels', postgresql_where=sa.text("status = 'active'"))
    op.drop_table('duels')
    op.drop_index(op.f('ix_auth_tokens_user_id'), table_name='auth_tokens')
    op.drop_table('auth_tokens')
    op.drop_index('ux_users_nickname_lower', table_name='users')
    op.drop_index('ix_users_rating', table_name='users')
    op.drop_table('users')
    op.drop_table('login_throttle')
