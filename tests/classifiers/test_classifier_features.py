"""Features: Chinese yields character n-grams, English word n-grams; TF-IDF as scikit-learn's."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from classifiers.features import TextFeatures, terms


def test_chinese_text_gives_character_ngrams() -> None:
    found = terms("订单没有发货")
    assert {"订", "单", "订单", "发货"} <= set(found)
    assert len(found) == 6 + 5


def test_mixed_text_keeps_words_and_cjk_apart() -> None:
    found = terms("Order 123 没有发货 please help")
    assert {"order", "123", "order 123", "没有", "please help"} <= set(found)
    assert "123 没" not in found


def test_chinese_features_non_empty() -> None:
    features = TextFeatures().fit(["订单没有发货", "发票抬头写错了", "账号无法登录"])
    matrix = features.transform(["我的订单还没有发货"])
    assert matrix.nnz > 0
    assert np.isclose(np.linalg.norm(matrix.toarray()), 1.0)


def test_unknown_text_gives_empty_row() -> None:
    features = TextFeatures().fit(["hello world"])
    matrix = features.transform(["", "zzz qqq"])
    assert matrix.shape == (2, features.n_features_out_)
    assert matrix.nnz == 0


def test_same_numbers_as_scikit_learn_tfidf() -> None:
    corpus = ["the printer is offline", "invoice paid twice", "发票 重复 扣款", "the invoice"]
    ours = TextFeatures().fit(corpus)
    reference = TfidfVectorizer(analyzer=terms, sublinear_tf=True).fit(corpus)
    probe = ["the printer printer invoice", "发票扣款了"]
    assert np.allclose(ours.transform(probe).toarray(), reference.transform(probe).toarray())


def test_state_round_trip_is_compact() -> None:
    features = TextFeatures(min_df=1).fit(["a bb cc", "bb 订单"])
    state = features.__getstate__()
    assert isinstance(state["terms"], str)
    clone = TextFeatures.__new__(TextFeatures)
    clone.__setstate__(state)
    assert clone.vocabulary_ == features.vocabulary_
    assert (clone.transform(["bb 订单"]) != features.transform(["bb 订单"])).nnz == 0
