"""Evaluation: trec_eval metrics, BLEU / ROUGE-L, BEIR data sets, BM25 parameter tuning.

The public names are re-exported at the top (``import ragcore as rc; rc.BM25``).
"""
