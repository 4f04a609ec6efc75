//! Simulated PKI.
