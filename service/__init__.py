"""isotune's study service: a stateless FastAPI server that holds Optuna studies on a shared
SQL store and hands their trials to workers."""
