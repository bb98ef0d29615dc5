"""credit notes: the document a credit note corrects; the canceled state

Revision ID: c166e193e709
Revises: 2b0d98ff8b84
Create Date: 2026-11-24 06:59:47.751475

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c166e193e709'
down_revision = '2b0d98ff8b84'
branch_labels = None
depends_on = None


STATES = ('pending', 'created', 'finalized', 'emailed', 'done', 'held', 'failed')


def _states(states):
    return "state IN (" + ", ".join(f"'{state}'" for state in states) + ")"


def upgrade():
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('original_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_documents_original_id_documents'), 'documents', ['original_id'], ['id'])
        batch_op.drop_constraint(op.f('ck_documents_state'), type_='check')
        batch_op.create_check_constraint('state', _states(STATES + ('canceled',)))


def downgrade():
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_documents_state'), type_='check')
        batch_op.create_check_constraint('state', _states(STATES))
        batch_op.drop_constraint(batch_op.f('fk_documents_original_id_documents'), type_='foreignkey')
        batch_op.drop_column('original_id')
