//! The database: entities, migrations and queries (sea-orm; SQLite or PostgreSQL).
