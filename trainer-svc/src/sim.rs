//! A seedable learner simulator: demo data, load and end-to-end test traffic.
