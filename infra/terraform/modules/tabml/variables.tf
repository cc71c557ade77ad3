variable "deployment" {
  description = "The tabml deployment these resources serve: staging or prod."
  type        = string
  validation {
    condition     = contains(["staging", "prod"], var.deployment)
    error_message = "deployment: expected staging or prod."
  }
}

variable "catalog_name" {
  description = "Unity Catalog catalog: the <catalog> of the profile's /Volumes/<catalog>/<schema>/<volume> paths."
  type        = string
}

variable "create_catalog" {
  description = "Create the catalog here; false when a metastore admin owns it and only grants are managed here."
  type        = bool
  default     = true
}

variable "catalog_storage_root" {
  description = "Managed storage location of a created catalog (null: the metastore's default)."
  type        = string
  default     = null
}

variable "schema_name" {
  description = "Schema that holds the volumes and the registered model."
  type        = string
}

variable "volume_names" {
  description = "Managed volumes in the schema: asset storage, MLflow artifacts and the tabml wheel."
  type        = list(string)
}

variable "asset_volume_name" {
  description = "The volume under storage.root, which scoring consumers may read."
  type        = string
  default     = "assets"
}

variable "projects" {
  description = "The projects the deployment runs (each pipeline.yaml's `name`). Each gets an MLflow experiment <experiment_folder>/<project> and a registered model catalog.schema.<project>, as the profile's mlflow.experiment_name and mlflow.model_name templates name them."
  type        = list(string)
}

variable "experiment_folder" {
  description = "Workspace folder of the projects' MLflow experiments: the profile's mlflow.experiment_name is <experiment_folder>/{project}."
  type        = string
}

variable "secret_scope" {
  description = "Secret scope the step launcher reads (databricks.secret_scope). Its values are put by the deploy workflow, never by Terraform, so they stay out of state and git."
  type        = string
}

variable "spark_version" {
  description = "The only Databricks runtime the job-cluster policy allows (databricks.cluster.spark_version)."
  type        = string
}

variable "node_type_ids" {
  description = "Node types the job-cluster policy allows; the first one is the default."
  type        = list(string)
  validation {
    condition     = length(var.node_type_ids) > 0
    error_message = "node_type_ids: expected at least one node type."
  }
}

variable "max_workers" {
  description = "Upper bound on workers of one job cluster."
  type        = number
}

variable "runner_display_name" {
  description = "Display name of the service principal that Dagster and its job clusters run as."
  type        = string
}

variable "deployer_group" {
  description = "Account-level group of the identities that deploy tabml (the CI service principal): manage rights."
  type        = string
}

variable "scoring_principals" {
  description = "Account-level groups or service principals that may load the model for scoring (EXECUTE) and read asset storage."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Extra custom tags forced onto every job cluster."
  type        = map(string)
  default     = {}
}

variable "instance_pool" {
  description = "An instance pool for the job clusters (faster starts); null: clusters take node_type_ids directly."
  type = object({
    name               = string
    node_type_id       = string
    min_idle_instances = number
    max_capacity       = number
    idle_minutes       = number
  })
  default = null
}
