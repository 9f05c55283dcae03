//! The Grid contract: one suite of behavioural checks that every backend must pass
//! (to be written).
