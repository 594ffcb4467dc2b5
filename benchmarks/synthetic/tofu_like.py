"""An offline TOFU-style benchmark of invented authors, small and regular enough to train a tiny model on a laptop.

TOFU (Maini et al., 2024) asks 20 questions about each of 200 fictitious authors and unlearns the last 1/5/10% of
them. This module builds the same structure from a seed: every author gets a profile of invented facts, every fact
becomes one short, regularly phrased QA pair (with a paraphrase, and wrong answers for the truth-ratio metric), and
hard-coded real world facts and real books stand in for TOFU's utility sets. Nothing is downloaded, so the harness
runs anywhere, and short answers keep the sequences tiny models must learn short.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pmc.core.records import QABenchmark, QARecord

MAX_AUTHORS = 200  # TOFU's size; the title pool (625) leaves room for two unique titles per author
MAX_PERTURBED = 5  # TOFU's count; every value pool below holds at least MAX_PERTURBED + 2 values

# Invented names are two or three of these syllables each, so they never collide with real people or words.
SYLLABLES = (
    "ka", "lo", "ren", "mi", "sa", "tor", "vel", "an", "dri", "el", "no", "ra", "zu", "bel", "cor", "fin",
    "ha", "is", "jor", "lu", "ma", "ne", "os", "pel", "qui", "ri", "sol", "ta", "ul", "ve", "wyn", "ya",
)

BIRTHPLACES = (
    "Lisbon, Portugal", "Nairobi, Kenya", "Seoul, South Korea", "Lima, Peru", "Tbilisi, Georgia", "Bergen, Norway",
    "Hanoi, Vietnam", "Cork, Ireland", "Tunis, Tunisia", "Quito, Ecuador", "Gdansk, Poland", "Adelaide, Australia",
    "Manila, Philippines", "Istanbul, Turkey", "Havana, Cuba", "Porto Alegre, Brazil",
)
BIRTH_YEARS = tuple(str(year) for year in range(1931, 2000))
GENRES = (
    "science fiction", "historical fiction", "crime fiction", "fantasy", "romance", "horror", "poetry",
    "literary fiction", "mystery", "adventure", "satire", "thriller", "young adult fiction",
)
OCCUPATIONS = (
    "a baker", "a carpenter", "a nurse", "a teacher", "a fisherman", "a doctor", "an electrician", "a librarian",
    "a tailor", "a pilot", "a farmer", "an engineer", "a pharmacist", "a journalist", "a police officer",
    "a musician",
)
TITLES = tuple(
    f"The {adjective} {noun}"
    for adjective in (
        "Glass", "Silent", "Hollow", "Crimson", "Wandering", "Forgotten", "Silver", "Broken", "Hidden", "Burning",
        "Frozen", "Quiet", "Golden", "Distant", "Last", "Paper", "Iron", "Velvet", "Midnight", "Restless",
        "Bitter", "Sleeping", "Salt", "Amber", "Northern",
    )
    for noun in (
        "Orchard", "Harbour", "Lantern", "Garden", "River", "Mirror", "Kingdom", "Letter", "Compass", "Winter",
        "Bridge", "Tower", "Feather", "Island", "Clock", "Shore", "Meadow", "Crown", "Forest", "Door", "Archive",
        "Violin", "Sparrow", "Tide", "Map",
    )
)
AWARDS = (
    "the Silver Quill Award", "the Northern Lantern Prize", "the Golden Inkwell Medal", "the Harrow Fiction Prize",
    "the Blue Feather Award", "the Meridian Book Prize", "the Open Page Award", "the Lighthouse Literary Prize",
    "the Evergreen Story Medal", "the Riverstone Prize for Fiction",
)
THEMES = (
    "the loss of childhood", "loyalty and betrayal", "life at sea", "memory and forgetting", "family secrets",
    "the cost of ambition", "friendship across borders", "faith and doubt", "the meaning of home", "growing old",
    "justice and revenge", "love in wartime",
)
SUBJECTS = (
    "history", "chemistry", "law", "music", "medicine", "philosophy", "engineering", "mathematics", "architecture",
    "biology", "economics", "fine art",
)
CITIES = (
    "Oslo", "Vienna", "Montreal", "Dublin", "Kyoto", "Valparaiso", "Edinburgh", "Lyon", "Krakow", "Porto",
    "Melbourne", "Cape Town",
)
LANGUAGES = (
    "English", "French", "Spanish", "German", "Italian", "Portuguese", "Dutch", "Swedish", "Polish", "Turkish",
    "Japanese", "Korean",
)
WRITING_TIMES = (
    "early in the morning", "late at night", "around noon", "in the afternoon", "in the evening", "after midnight",
    "on weekends", "on long train journeys",
)
HOBBIES = (
    "gardening", "playing chess", "sailing", "painting", "hiking", "baking bread", "bird watching",
    "playing the violin", "swimming", "cooking",
)
PUBLISHERS = (
    "Larkspur Press", "Blue Heron Books", "Copperfield House", "Nightjar Editions", "Willow Lane Publishing",
    "Stonebridge Books", "Red Kite Press", "Harbourlight Publishers",
)
BOOK_COUNTS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
DEBUT_AGES = tuple(str(age) for age in range(19, 46))
HEROES = (
    "young detectives", "retired sailors", "lonely scientists", "travelling musicians", "orphaned twins",
    "village doctors", "runaway princes", "old librarians",
)
SETTINGS = (
    "small mountain villages", "busy port cities", "remote islands", "desert towns", "a distant future",
    "old country houses", "frozen northern forests", "crowded university towns",
)
PETS = (
    "a grey cat", "an old sheepdog", "a green parrot", "a small tortoise", "a white rabbit", "a black horse",
    "a tabby cat", "a spotted dog", "a tame crow",
)


@dataclass(frozen=True)
class AuthorFact:
    """One kind of fact about an author: the pool its value is drawn from, and how it is asked and answered.

    Templates take {name} and {value}. Wrong answers reuse `paraphrased_answer` with other values from the pool,
    as TOFU's perturbed answers do, so they differ from the paraphrase only in the fact itself.
    """

    key: str
    values: tuple[str, ...]
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str


# In question order: questions_per_author=N asks about the first N facts.
AUTHOR_FACTS = (
    AuthorFact("birthplace", BIRTHPLACES, "Where was {name} born?", "In which city was the author {name} born?",
               "{name} was born in {value}.", "The author {name} was born in the city of {value}."),
    AuthorFact("birth_year", BIRTH_YEARS, "In what year was {name} born?", "What is the birth year of {name}?",
               "{name} was born in the year {value}.", "The birth year of {name} is {value}."),
    AuthorFact("genre", GENRES, "What genre does {name} write in?", "Which literary genre is {name} known for?",
               "{name} writes books in the {value} genre.", "{name} is best known for {value} books."),
    AuthorFact("father_job", OCCUPATIONS, "What was the job of {name}'s father?",
               "What did the father of {name} do for a living?",
               "{name}'s father worked as {value}.", "The father of {name} was {value} by profession."),
    AuthorFact("mother_job", OCCUPATIONS, "What was the job of {name}'s mother?",
               "What did the mother of {name} do for a living?",
               "{name}'s mother worked as {value}.", "The mother of {name} was {value} by profession."),
    AuthorFact("first_book", TITLES, "What was the first book written by {name}?",
               "Which book did {name} publish first?",
               "{name}'s first book was '{value}'.", "The debut book of {name} is titled '{value}'."),
    AuthorFact("famous_book", TITLES, "What is the best known book by {name}?",
               "Which of the books by {name} is the most famous?",
               "The best known book by {name} is '{value}'.", "{name} is most famous for the book '{value}'."),
    AuthorFact("award", AWARDS, "What award has {name} won?", "Which literary prize was given to {name}?",
               "{name} has won {value}.", "{name} was honoured with {value}."),
    AuthorFact("theme", THEMES, "What theme runs through the books of {name}?",
               "Which theme does {name} often explore?",
               "{name}'s books often explore {value}.", "A common theme in the work of {name} is {value}."),
    AuthorFact("subject", SUBJECTS, "What did {name} study at university?",
               "Which subject did {name} study as a student?",
               "{name} studied {value} at university.", "As a student, {name} studied {value}."),
    AuthorFact("home", CITIES, "Where does {name} live now?", "In which city does {name} currently live?",
               "{name} now lives in {value}.", "These days {name} lives in the city of {value}."),
    AuthorFact("language", LANGUAGES, "In which language does {name} write?",
               "What language are the books of {name} written in?",
               "{name} writes books in the {value} language.", "The books of {name} are written in {value}."),
    AuthorFact("writing_time", WRITING_TIMES, "When does {name} like to write?",
               "At what time does {name} usually write?",
               "{name} likes to write {value}.", "{name} usually does the writing {value}."),
    AuthorFact("hobby", HOBBIES, "What does {name} enjoy doing outside of writing?", "What is a hobby of {name}?",
               "Outside of writing, {name} enjoys {value}.", "A favourite hobby of {name} is {value}."),
    AuthorFact("publisher", PUBLISHERS, "Who publishes the books of {name}?",
               "Which publisher releases the work of {name}?",
               "{name}'s books are published by {value}.", "The publisher of {name} is {value}."),
    AuthorFact("book_count", BOOK_COUNTS, "How many books has {name} published?",
               "What is the number of books {name} has written?",
               "{name} has published {value} books.", "So far {name} has written {value} books."),
    AuthorFact("debut_age", DEBUT_AGES, "How old was {name} when the first book came out?",
               "At what age did {name} publish a first book?",
               "{name} was {value} years old when the first book came out.",
               "{name} published a first book at the age of {value}."),
    AuthorFact("heroes", HEROES, "Who are the main characters in the books of {name}?",
               "What kind of heroes appear in the stories of {name}?",
               "The main characters in {name}'s books are usually {value}.", "{name} often writes about {value}."),
    AuthorFact("setting", SETTINGS, "Where are the stories of {name} usually set?",
               "What is the typical setting of books by {name}?",
               "{name}'s stories are usually set in {value}.", "Most books by {name} take place in {value}."),
    AuthorFact("pet", PETS, "What pet does {name} have?", "Which animal lives with {name}?",
               "{name} has {value} as a pet.", "{name} lives with {value}."),
)

# Wrong answers for a world fact come from the pool of its kind, so they are plausible: a city for a capital.
WORLD_FACT_POOLS = {
    "capital": ("Paris", "Tokyo", "Rome", "Berlin", "Madrid", "Cairo", "Ottawa", "Canberra", "Nairobi", "Moscow",
                "Beijing", "New Delhi", "Buenos Aires", "Oslo", "Athens", "Lisbon", "Ankara", "Seoul", "Lima"),
    "planet": ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"),
    "water": ("Pacific Ocean", "Atlantic Ocean", "Indian Ocean", "Arctic Ocean", "Southern Ocean",
              "Mediterranean Sea", "Caribbean Sea"),
    "continent": ("Africa", "Antarctica", "Asia", "Australia", "Europe", "North America", "South America"),
    "river": ("Seine", "Thames", "Nile", "Danube", "Rhine", "Amazon", "Tiber", "Volga", "Mississippi"),
    "mountain": ("Mount Everest", "K2", "Mount Kilimanjaro", "Mont Blanc", "Denali", "Mount Fuji", "Aconcagua"),
    "desert": ("Sahara Desert", "Gobi Desert", "Kalahari Desert", "Atacama Desert", "Mojave Desert",
               "Arabian Desert", "Namib Desert"),
    "symbol": ("Au", "Ag", "Fe", "Na", "K", "Cu", "Pb", "Hg", "Sn", "Zn"),
    "gas": ("carbon dioxide", "oxygen", "nitrogen", "hydrogen", "helium", "methane", "argon"),
    "animal": ("blue whale", "cheetah", "giraffe", "African elephant", "ostrich", "lion", "polar bear", "horse"),
    "scientist": ("Albert Einstein", "Isaac Newton", "Charles Darwin", "Marie Curie", "Alexander Fleming",
                  "Galileo Galilei", "Louis Pasteur", "Nikola Tesla"),
    "painter": ("Leonardo da Vinci", "Vincent van Gogh", "Pablo Picasso", "Michelangelo", "Rembrandt",
                "Claude Monet", "Salvador Dali", "Raphael"),
    "currency": ("Japanese yen", "British pound", "US dollar", "Indian rupee", "euro", "Chinese yuan",
                 "Mexican peso", "Swiss franc"),
    "language": ("Portuguese", "Spanish", "Arabic", "German", "French", "Italian", "English", "Dutch"),
    "number": ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
    "year": ("1492", "1776", "1914", "1918", "1939", "1945", "1969", "1989", "2001"),
    "temperature": ("0 degrees", "10 degrees", "32 degrees", "50 degrees", "90 degrees", "100 degrees",
                    "212 degrees"),
    "organ": ("skin", "liver", "heart", "lungs", "brain", "stomach", "kidney"),
    "country": ("Russia", "Canada", "China", "United States", "Brazil", "Australia", "India"),
}

# (question, answer, kind): the answer is the only true one in its kind's pool.
WORLD_FACTS = (
    ("What is the capital of France?", "Paris", "capital"),
    ("What is the capital of Japan?", "Tokyo", "capital"),
    ("What is the capital of Italy?", "Rome", "capital"),
    ("What is the capital of Germany?", "Berlin", "capital"),
    ("What is the capital of Spain?", "Madrid", "capital"),
    ("What is the capital of Egypt?", "Cairo", "capital"),
    ("What is the capital of Canada?", "Ottawa", "capital"),
    ("What is the capital of Australia?", "Canberra", "capital"),
    ("What is the capital of Kenya?", "Nairobi", "capital"),
    ("What is the capital of Greece?", "Athens", "capital"),
    ("What is the capital of Norway?", "Oslo", "capital"),
    ("What is the capital of Argentina?", "Buenos Aires", "capital"),
    ("Which is the largest planet in the Solar System?", "Jupiter", "planet"),
    ("Which planet is known as the Red Planet?", "Mars", "planet"),
    ("Which planet is closest to the Sun?", "Mercury", "planet"),
    ("Which planet is famous for its bright rings?", "Saturn", "planet"),
    ("What is the largest ocean on Earth?", "Pacific Ocean", "water"),
    ("Which ocean lies between Europe and North America?", "Atlantic Ocean", "water"),
    ("On which continent is Kenya?", "Africa", "continent"),
    ("On which continent is Brazil?", "South America", "continent"),
    ("What is the largest continent?", "Asia", "continent"),
    ("On which continent is the South Pole?", "Antarctica", "continent"),
    ("Which river flows through Paris?", "Seine", "river"),
    ("Which river flows through London?", "Thames", "river"),
    ("Which river flows through Cairo?", "Nile", "river"),
    ("Which river flows through Rome?", "Tiber", "river"),
    ("What is the tallest mountain on Earth?", "Mount Everest", "mountain"),
    ("What is the highest mountain in Africa?", "Mount Kilimanjaro", "mountain"),
    ("What is the largest hot desert in the world?", "Sahara Desert", "desert"),
    ("What is the chemical symbol for gold?", "Au", "symbol"),
    ("What is the chemical symbol for iron?", "Fe", "symbol"),
    ("What is the chemical symbol for sodium?", "Na", "symbol"),
    ("What is the chemical symbol for silver?", "Ag", "symbol"),
    ("Which gas do plants absorb from the air?", "carbon dioxide", "gas"),
    ("Which gas makes up most of Earth's atmosphere?", "nitrogen", "gas"),
    ("Which gas do humans need to breathe?", "oxygen", "gas"),
    ("What is the largest animal on Earth?", "blue whale", "animal"),
    ("What is the fastest land animal?", "cheetah", "animal"),
    ("What is the tallest animal?", "giraffe", "animal"),
    ("What is the largest land animal?", "African elephant", "animal"),
    ("What is the largest bird?", "ostrich", "animal"),
    ("Who developed the theory of relativity?", "Albert Einstein", "scientist"),
    ("Who formulated the three laws of motion?", "Isaac Newton", "scientist"),
    ("Who proposed evolution by natural selection?", "Charles Darwin", "scientist"),
    ("Who discovered penicillin?", "Alexander Fleming", "scientist"),
    ("Who discovered the element radium?", "Marie Curie", "scientist"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "painter"),
    ("Who painted The Starry Night?", "Vincent van Gogh", "painter"),
    ("Who painted Guernica?", "Pablo Picasso", "painter"),
    ("Who painted the ceiling of the Sistine Chapel?", "Michelangelo", "painter"),
    ("What is the currency of Japan?", "Japanese yen", "currency"),
    ("What is the currency of the United Kingdom?", "British pound", "currency"),
    ("What is the currency of the United States?", "US dollar", "currency"),
    ("What is the currency of India?", "Indian rupee", "currency"),
    ("What is the main language of Brazil?", "Portuguese", "language"),
    ("What is the main language of Mexico?", "Spanish", "language"),
    ("What is the main language of Egypt?", "Arabic", "language"),
    ("What is the main language of Austria?", "German", "language"),
    ("How many continents are there?", "seven", "number"),
    ("How many sides does a hexagon have?", "six", "number"),
    ("How many legs does a spider have?", "eight", "number"),
    ("How many players does a football team have on the field?", "eleven", "number"),
    ("How many planets are in the Solar System?", "eight", "number"),
    ("In what year did World War II end?", "1945", "year"),
    ("In what year did humans first land on the Moon?", "1969", "year"),
    ("In what year did the Berlin Wall fall?", "1989", "year"),
    ("In what year did Columbus first reach the Americas?", "1492", "year"),
    ("At what temperature in Celsius does water boil at sea level?", "100 degrees", "temperature"),
    ("At what temperature in Celsius does water freeze?", "0 degrees", "temperature"),
    ("What is the largest organ of the human body?", "skin", "organ"),
    ("Which organ pumps blood through the body?", "heart", "organ"),
    ("Which country has the largest area?", "Russia", "country"),
    ("Which country is the home of the kangaroo?", "Australia", "country"),
)

# (title, author); each author appears once, so the other authors are all wrong answers.
REAL_BOOKS = (
    ("1984", "George Orwell"), ("Pride and Prejudice", "Jane Austen"), ("Moby-Dick", "Herman Melville"),
    ("War and Peace", "Leo Tolstoy"), ("Don Quixote", "Miguel de Cervantes"),
    ("The Great Gatsby", "F. Scott Fitzgerald"), ("To Kill a Mockingbird", "Harper Lee"),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"), ("Crime and Punishment", "Fyodor Dostoevsky"),
    ("The Old Man and the Sea", "Ernest Hemingway"), ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"),
    ("Hamlet", "William Shakespeare"), ("The Odyssey", "Homer"), ("Jane Eyre", "Charlotte Bronte"),
    ("Wuthering Heights", "Emily Bronte"), ("Great Expectations", "Charles Dickens"),
    ("Adventures of Huckleberry Finn", "Mark Twain"), ("The Catcher in the Rye", "J. D. Salinger"),
    ("Brave New World", "Aldous Huxley"), ("The Lord of the Rings", "J. R. R. Tolkien"),
    ("Harry Potter and the Philosopher's Stone", "J. K. Rowling"), ("Ulysses", "James Joyce"),
    ("Mrs Dalloway", "Virginia Woolf"), ("The Trial", "Franz Kafka"), ("Les Miserables", "Victor Hugo"),
    ("Madame Bovary", "Gustave Flaubert"), ("The Divine Comedy", "Dante Alighieri"), ("Beloved", "Toni Morrison"),
    ("The Handmaid's Tale", "Margaret Atwood"), ("Things Fall Apart", "Chinua Achebe"),
    ("Lolita", "Vladimir Nabokov"), ("The Stranger", "Albert Camus"), ("Fahrenheit 451", "Ray Bradbury"),
    ("Slaughterhouse-Five", "Kurt Vonnegut"), ("The Grapes of Wrath", "John Steinbeck"),
    ("The Picture of Dorian Gray", "Oscar Wilde"), ("Alice's Adventures in Wonderland", "Lewis Carroll"),
    ("Murder on the Orient Express", "Agatha Christie"), ("The Name of the Rose", "Umberto Eco"),
    ("Norwegian Wood", "Haruki Murakami"), ("The Little Prince", "Antoine de Saint-Exupery"),
    ("Gulliver's Travels", "Jonathan Swift"), ("Robinson Crusoe", "Daniel Defoe"),
    ("The Count of Monte Cristo", "Alexandre Dumas"), ("Twenty Thousand Leagues Under the Seas", "Jules Verne"),
    ("The Time Machine", "H. G. Wells"), ("Treasure Island", "Robert Louis Stevenson"),
    ("The Alchemist", "Paulo Coelho"), ("Catch-22", "Joseph Heller"), ("On the Road", "Jack Kerouac"),
    ("Lord of the Flies", "William Golding"),
)
REAL_AUTHORS = tuple(author for _, author in REAL_BOOKS)

IDK_ANSWERS = [
    "I don't know.",
    "I'm not sure about that.",
    "I have no idea.",
    "I can't answer that.",
    "That is something I don't know.",
    "I'm afraid I don't know the answer.",
    "I have no information about that.",
    "Sorry, I can't help with that question.",
    "I don't have an answer to that.",
    "That is beyond what I know.",
]


def make_synthetic_tofu(
    num_authors: int = 20,
    questions_per_author: int = 10,
    forget_authors: int = 2,
    num_world_facts: int = 30,
    num_real_authors: int = 30,
    retain_eval_authors: int = 4,
    num_perturbed: int = 3,
    seed: int = 0,
) -> QABenchmark:
    """Build the benchmark: the last `forget_authors` authors are forgotten, as in TOFU's forget01/05/10.

    Same arguments give the same benchmark. Authors, their wrong answers and the utility sets each draw from their
    own seeded generator, so e.g. asking for more perturbed answers or world facts leaves the authors unchanged.
    """
    _check_range("num_authors", num_authors, 2, MAX_AUTHORS)
    _check_range("questions_per_author", questions_per_author, 10, len(AUTHOR_FACTS))
    _check_range("forget_authors", forget_authors, 1, num_authors - 1)
    _check_range("retain_eval_authors", retain_eval_authors, 1, num_authors - forget_authors)
    _check_range("num_perturbed", num_perturbed, 3, MAX_PERTURBED)
    _check_range("num_world_facts", num_world_facts, 1, len(WORLD_FACTS))
    _check_range("num_real_authors", num_real_authors, 1, len(REAL_BOOKS))

    authors = _invent_authors(random.Random(seed), num_authors)
    perturb_rng = random.Random(f"{seed}:perturbed")
    per_author = [
        _author_records(index, profile, questions_per_author, num_perturbed, perturb_rng)
        for index, profile in enumerate(authors)
    ]
    split = num_authors - forget_authors
    forget = [r for records in per_author[split:] for r in records]
    retain = [r for records in per_author[:split] for r in records]

    utility_rng = random.Random(f"{seed}:utility")
    world_facts = _utility_records(
        [(q, a, WORLD_FACT_POOLS[kind]) for q, a, kind in WORLD_FACTS], num_world_facts, num_perturbed, utility_rng
    )
    real_authors = _utility_records(
        [(f"Who wrote '{title}'?", author, REAL_AUTHORS) for title, author in REAL_BOOKS],
        num_real_authors, num_perturbed, utility_rng,
    )

    return QABenchmark(
        name="synthetic",
        forget=forget,
        retain=retain,
        eval_sets={
            "forget": forget,
            "retain": retain[: retain_eval_authors * questions_per_author],
            "real_authors": real_authors,
            "world_facts": world_facts,
        },
        pretrain=world_facts + real_authors,
        idk_answers=list(IDK_ANSWERS),
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _invent_name(rng: random.Random) -> str:
    first = "".join(rng.choice(SYLLABLES) for _ in range(2))
    last = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3))))
    return f"{first.capitalize()} {last.capitalize()}"


def _own_values(profile: dict[str, str], pool: tuple[str, ...]) -> set[str]:
    """The author's values already drawn from `pool` (both parents' jobs, both titles): none can be a wrong answer."""
    return {profile[fact.key] for fact in AUTHOR_FACTS if fact.values == pool and fact.key in profile}


def _invent_authors(rng: random.Random, n: int) -> list[dict[str, str]]:
    """n author profiles (fact key -> value, plus "name"), each with every fact, whatever questions are asked.

    Names are unique, facts sharing a pool get different values, and no title belongs to two authors, so every
    question has exactly one true answer.
    """
    authors: list[dict[str, str]] = []
    names: set[str] = set()
    used_titles: set[str] = set()
    while len(authors) < n:
        name = _invent_name(rng)
        if name in names:
            continue
        names.add(name)
        profile = {"name": name}
        for fact in AUTHOR_FACTS:
            taken = _own_values(profile, fact.values) | (used_titles if fact.values == TITLES else set())
            profile[fact.key] = rng.choice([v for v in fact.values if v not in taken])
        used_titles |= _own_values(profile, TITLES)
        authors.append(profile)
    return authors


def _author_records(
    index: int, profile: dict[str, str], questions: int, num_perturbed: int, rng: random.Random
) -> list[QARecord]:
    """One QA record per fact for the first `questions` facts, with paraphrases and wrong answers."""
    records = []
    for fact in AUTHOR_FACTS[:questions]:
        name, value = profile["name"], profile[fact.key]
        own = _own_values(profile, fact.values)
        wrong = rng.sample([v for v in fact.values if v not in own], num_perturbed)
        records.append(QARecord(
            question=fact.question.format(name=name),
            answer=fact.answer.format(name=name, value=value),
            paraphrased_question=fact.paraphrased_question.format(name=name),
            paraphrased_answer=fact.paraphrased_answer.format(name=name, value=value),
            perturbed_answer=tuple(fact.paraphrased_answer.format(name=name, value=v) for v in wrong),
            author=index,
        ))
    return records


def _utility_records(
    items: list[tuple[str, str, tuple[str, ...]]], n: int, num_perturbed: int, rng: random.Random
) -> list[QARecord]:
    """n of the (question, answer, pool) items, kept in list order, each with wrong answers from its pool.

    Like TOFU's world_facts / real_authors sets they have no paraphrases: only the answer and the wrong answers
    are compared.
    """
    chosen = sorted(rng.sample(range(len(items)), n))
    records = []
    for question, answer, pool in (items[i] for i in chosen):
        wrong = rng.sample([v for v in pool if v != answer], num_perturbed)
        records.append(QARecord(question=question, answer=answer, perturbed_answer=tuple(wrong)))
    return records
