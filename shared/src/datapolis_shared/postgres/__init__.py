"""PostgreSQL on asyncpg: pools, migrations, transactional outbox, inbox."""
