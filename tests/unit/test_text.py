from deployments.faq.text import clean_text, stem_words, title_of


def test_code_blocks_are_dropped():
    raw = "How to sort?. <p>I tried</p><pre><code>arr.sort()\nfoo()</code></pre><p>but it fails</p>"
    assert clean_text(raw) == "how to sort?. i tried but it fails"


def test_code_blocks_text_is_kept_when_asked():
    raw = "Sort?. <p>I tried</p><pre class='js'><code>arr.sort((a, b) =&gt; a - b)</code></pre><p>but</p>"
    assert clean_text(raw, keep_code_blocks=True) == "sort?. i tried arr.sort((a, b) => a - b) but"


def test_stem_words_cuts_every_word_and_drops_symbols():
    assert stem_words("iterating the iteration => it's an array.prototype", 4) == "iter the iter it s an arra prot"
    assert stem_words("", 4) == ""


def test_link_text_is_kept_unless_it_is_a_url():
    raw = '<p>See <a href="https://x.org/a">the MDN page</a> and <a href="https://x.org">https://x.org</a></p>'
    assert clean_text(raw) == "see the mdn page and"


def test_bare_urls_tags_and_entities():
    raw = "<p>Compare a &gt; b, see http://example.com/x?y=1 or www.example.org</p><br/>DONE"
    assert clean_text(raw) == "compare a > b, see or done"


def test_inline_code_is_kept():
    assert clean_text("<p>What does <code>x || y</code> do?</p>") == "what does x || y do?"


def test_title_of_reference_text_and_plain_text():
    assert title_of("Is there an &quot;exists&quot; function?. <p>body</p>") == 'Is there an "exists" function?'
    assert title_of("A plain question") == "A plain question"


def test_comparisons_in_a_typed_question_are_not_taken_for_tags():
    assert clean_text("Difference between <= and >=?") == "difference between <= and >=?"
    assert clean_text("if a < b && b > c") == "if a < b && b > c"
    assert clean_text("<p>x</p><!-- a comment --><br/>y") == "x y"
