//! `trainer-svc import`: a CSV file into `completed_tasks`, in one transaction.
