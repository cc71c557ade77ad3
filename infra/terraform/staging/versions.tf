terraform {
  required_version = ">= 1.6"
  required_providers {
    databricks = {
      source  = "databricks/databricks"
      version = "~> 1.70"
    }
  }
  # State lives in S3 (the clusters are AWS i3 nodes); bucket, key and region come from
  # `terraform init -backend-config=...` in .github/workflows, so no account detail is committed.
  backend "s3" {}
}

# Workspace and credentials come from DATABRICKS_HOST, DATABRICKS_CLIENT_ID and
# DATABRICKS_CLIENT_SECRET (OAuth machine-to-machine for the deployer service principal).
provider "databricks" {}
