"""Models of the paper's four workloads (:mod:`.architectures`) and what the server and the clients do
with them: flat parameter vectors and batched losses (:mod:`.flat`), reproducible dropout
(:mod:`.dropout`) and a ``vmap``-able LSTM (:mod:`.lstm`)."""
from fedml_heterofl.models.architectures import CNN, MODELS, RNN, LogisticRegression, ResNet20, build_model
from fedml_heterofl.models.dropout import Dropout, draws_from_global_rng, dropout_generator, dropout_mask
from fedml_heterofl.models.flat import ModelLoss, ParamLayout, batched_loss
from fedml_heterofl.models.lstm import LSTM

__all__ = ["CNN", "LSTM", "MODELS", "RNN", "Dropout", "LogisticRegression", "ModelLoss", "ParamLayout",
           "ResNet20", "batched_loss", "build_model", "draws_from_global_rng", "dropout_generator", "dropout_mask"]
