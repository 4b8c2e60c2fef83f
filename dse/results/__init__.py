"""What a study leaves behind: result files, figures, the report page, analysis (EDFs, trends, importance,
refinement), ablation tables beside the papers, and W&B."""
