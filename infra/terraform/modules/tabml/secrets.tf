# The secret scope that the step launcher exports to remote steps (databricks.secrets in the
# profile). Terraform creates the scope and its ACLs only: the values are written by the
# deploy workflow from GitHub environment secrets, so they never reach git or Terraform state.

resource "databricks_secret_scope" "tabml" {
  name = var.secret_scope
}

resource "databricks_secret_acl" "deployer_manages" {
  scope      = databricks_secret_scope.tabml.name
  principal  = var.deployer_group
  permission = "MANAGE"
}

resource "databricks_secret_acl" "runner_reads" {
  scope      = databricks_secret_scope.tabml.name
  principal  = databricks_service_principal.runner.application_id
  permission = "READ"
}
