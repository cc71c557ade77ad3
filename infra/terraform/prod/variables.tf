variable "deployer_group" {
  description = "Account-level group of the prod deployer (the CI service principal is a member)."
  type        = string
  default     = "tabml-prod-deployers"
}

variable "scoring_principals" {
  description = "Account-level groups that may load the prod model and read its predictions."
  type        = list(string)
  default     = []
}

variable "create_catalog" {
  description = "Create catalog tabml_prod here (false when a metastore admin provides it)."
  type        = bool
  default     = true
}

variable "catalog_storage_root" {
  description = "Managed storage location of the catalog (null: the metastore default)."
  type        = string
  default     = null
}
