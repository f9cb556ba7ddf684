//! The pure builder, placeholder until the route builder lands below.
