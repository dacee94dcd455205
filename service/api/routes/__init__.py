"""The API's routes, one module per audience: operations, studies, trials and workers."""
