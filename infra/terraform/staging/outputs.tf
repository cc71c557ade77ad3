output "storage_root" {
  value = module.tabml.storage_root
}

output "registered_model_full_names" {
  value = module.tabml.registered_model_full_names
}

output "experiment_ids" {
  value = module.tabml.experiment_ids
}

output "secret_scope" {
  value = module.tabml.secret_scope
}

output "job_cluster_policy_id" {
  value = module.tabml.job_cluster_policy_id
}

output "runner_application_id" {
  value = module.tabml.runner_application_id
}

output "instance_pool_id" {
  value = module.tabml.instance_pool_id
}
