//! The store conformance suite on PostgreSQL: a throw-away cluster, a database per case.

weld_pipeline::store_conformance!(weld_pipeline_postgres::testing::PostgresUnderTest::new());
