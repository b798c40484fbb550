pub use lux_dsl as dsl;
