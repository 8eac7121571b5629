//! A statement's parameters, bound by name: each value is bound once and the statement's text
//! names its placeholder (`$n`) where it is used, so a new value is one more binding, never a
//! renumbering of the others.
//!
//! The text comes out the same for every call that binds in the same order, as the statement
//! cache needs (`crate::statements`), and the values go in one round trip with it.

use tokio_postgres::types::ToSql;

/// A value a statement takes.
pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

/// The parameters of one statement, in the order they were bound.
#[derive(Default)]
pub(super) struct Params<'a> {
    values: Vec<Param<'a>>,
}

impl<'a> Params<'a> {
    /// Binds `value`; returns its placeholder, for the statement's text.
    pub(super) fn bind(&mut self, value: Param<'a>) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    /// The values, in their placeholders' order: what the statement is run with.
    pub(super) fn values(&self) -> &[Param<'a>] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::Params;

    #[test]
    fn each_value_bound_gets_the_next_placeholder_and_keeps_its_place() {
        let (a, b, c) = (1_i64, "two", true);
        let mut params = Params::default();
        assert_eq!(params.bind(&a), "$1");
        assert_eq!(params.bind(&b), "$2");
        assert_eq!(params.bind(&c), "$3");
        assert_eq!(params.values().len(), 3);
    }
}
