//! The storage conformance suite, passed by the sled store on real files in temp directories.

weld_pipeline::store_conformance!(weld_pipeline::testing::stores::SledUnderTest::new());
