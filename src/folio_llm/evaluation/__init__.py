"""Evaluation: generate answers for the test split and score them field by field.

``scoring`` (pure Python, no model needed) compares answers with references; ``generate``
(torch) writes the answers; ``run`` ties them together for the evaluate command and stage;
``breakdown`` splits the scores by description style and inferred field.
"""
