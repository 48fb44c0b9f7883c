//! Phi-accrual failure detection (in progress).
