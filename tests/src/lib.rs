pub mod apiserver;
pub mod cli;
pub mod cluster;
pub mod fixtures;
pub mod kubectl;
pub mod outcome;
pub mod process;
