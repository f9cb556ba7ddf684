//! Skybridge: places model replicas across private and public compute pools, bursts stateless
//! replicas to public clouds on demand, and keeps sensitive work private.
#![deny(warnings)]
#![forbid(unsafe_code)]

pub mod api;
pub mod artifacts;
pub mod burst;
pub mod capacity;
pub mod demand;
pub mod estate;
pub mod operator;
pub mod planner;
pub mod report;
pub mod rollout;
pub mod simulate;
pub mod traffic;
